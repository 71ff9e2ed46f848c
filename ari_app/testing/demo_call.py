"""Place one demo 112 call with SIPp: ``python -m ari_app.testing.demo_call --digit 2``.

``--operator-phone 5070`` plays an operator's softphone instead (answers one call).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from ari_app.config import default_site_code, load_site
from ari_app.testing.sipp import SippRun, run_sipp


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--site", default=default_site_code())
    p.add_argument("--digit", help="menu key to press; none means a silent caller")
    p.add_argument("--caller", default="081234567890")
    p.add_argument("--operator-phone", type=int, metavar="PORT",
                   help="instead: be an operator's phone on this port, answer one call, talk 10 s")
    args = p.parse_args()
    site = load_site(args.site)
    if args.operator_phone:
        run = SippRun("operator_answer_talk.xml", uas=True, local_port=args.operator_phone,
                      extra_args=["-d", "10000"], timeout_s=600)
    elif args.digit:
        run = SippRun("caller_key.xml", target_port=site.asterisk.sip_port,
                      keys={"caller": args.caller}, template={"digit": args.digit}, timeout_s=300)
    else:
        run = SippRun("caller_silent.xml", target_port=site.asterisk.sip_port,
                      keys={"caller": args.caller}, timeout_s=300)
    result = asyncio.run(run_sipp(run))
    print(f"calls ok: {result.successful}, failed: {result.failed}")
    if result.errors:
        print(result.errors, file=sys.stderr)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
