"""The [edge] site table and the rendered Kamailio config (real `kamailio -c`)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from ari_app.config import SITES_DIR, ConfigError, parse_site
from ari_app.edge.kamailio import EdgeError, EdgeSettings, check_config, nodes_from, render


def site_data(edge: Any) -> dict[str, Any]:
    data = tomllib.loads((SITES_DIR / "batola.toml").read_text())
    data["edge"] = edge
    return data


def test_edge_table_is_read_with_its_nodes() -> None:
    site = parse_site("batola.toml", site_data({
        "listen": "10.0.0.10:5060", "ping_interval_s": 3,
        "nodes": [{"name": "a", "address": "10.0.0.11:5060"},
                  {"name": "b", "address": "10.0.0.12:5060"}]}))
    assert site.edge is not None
    assert site.edge.nodes == (("a", "10.0.0.11:5060"), ("b", "10.0.0.12:5060"))
    assert site.edge.ping_interval_s == 3 and site.edge.listen == "10.0.0.10:5060"


@pytest.mark.parametrize(("edge", "key", "found"), [
    ({"listen": "edge.local", "nodes": [{"name": "a", "address": "10.0.0.11:5060"}]},
     "edge.listen", "edge.local"),
    ({"listen": "10.0.0.10:5060", "nodes": []}, "edge.nodes", "none"),
    ({"listen": "10.0.0.10:5060", "nodes": [{"name": "a", "address": "10.0.0.11"}]},
     "edge.nodes[0].address", "10.0.0.11"),
    ({"listen": "10.0.0.10:5060", "nodes": [{"name": "a", "address": "10.0.0.11:5060"},
                                             {"name": "b", "address": "10.0.0.11:5060"}]},
     "edge.nodes", "10.0.0.11:5060"),
    ({"listen": "10.0.0.10:5060", "nodes": [{"name": "a", "address": "10.0.0.11:5060"}],
      "ping": 2}, "edge.ping", ""),
])
def test_a_bad_edge_table_names_the_key(edge: Any, key: str, found: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_site("batola.toml", site_data(edge))
    assert key in str(err.value) and found in str(err.value)


def test_rendered_config_is_accepted_by_kamailio_and_lists_every_node(tmp_path: Path) -> None:
    settings = EdgeSettings(listen="127.0.0.1:5999",
                            nodes=nodes_from([("a", "127.0.0.11:5060"), ("b", "127.0.0.12:5060")]),
                            operators=(("op1", "0" * 32),))
    rendered = render(settings, tmp_path)
    check_config(rendered)   # raises with kamailio's own error lines if it refuses the file
    assert rendered.dispatcher_list.read_text().count("\n1 sip:127.0.0.1") == 2
    assert '$sht(ha1=>op1) = "' + "0" * 32 + '";' in rendered.config.read_text()


def test_bad_edge_settings_are_refused_before_rendering() -> None:
    with pytest.raises(EdgeError, match="listed twice"):
        EdgeSettings(listen="127.0.0.1:5999",
                     nodes=nodes_from([("a", "127.0.0.11:5060"), ("b", "127.0.0.11:5060")]))
    with pytest.raises(EdgeError, match="MD5 HA1"):
        EdgeSettings(listen="127.0.0.1:5999", nodes=nodes_from([("a", "127.0.0.11:5060")]),
                     operators=(("op1", "x\";exit;"),))
