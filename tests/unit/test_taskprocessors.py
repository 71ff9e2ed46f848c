"""Reading Asterisk's `core show taskprocessors`."""

from __future__ import annotations

from ari_app.pbx.taskprocessors import parse

SAMPLE = """
Processor   Processed   In Queue   Max Depth   Low water High water
ast_msg_queue   0   0   0   450   500
stasis/m:ari:application/siaga112-jepara   9120   12   512   450   500
pjsip/default-0000000a   20   0   2   450   500

78 taskprocessors
"""


def test_queues_are_read_and_a_queue_past_its_high_water_mark_is_flagged() -> None:
    queues = {q.name: q for q in parse(SAMPLE)}
    assert len(queues) == 3
    ari = queues["stasis/m:ari:application/siaga112-jepara"]
    assert (ari.processed, ari.in_queue, ari.max_depth, ari.high_water) == (9120, 12, 512, 500)
    assert ari.reached_high_water
    assert not queues["pjsip/default-0000000a"].reached_high_water
