"""``python -m devstack.intuit_sim``: run the simulator on its own until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from devstack.intuit_sim.server import IntuitSimulator


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until Ctrl-C or SIGTERM; print its URLs as one JSON line."""
    parser = argparse.ArgumentParser(
        prog="python -m devstack.intuit_sim", description="Intuit OAuth 2.0 / OIDC simulator"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--auto-approve", action="store_true", help="skip the consent page")
    parser.add_argument("--client-id", default="sim-client-id")
    parser.add_argument("--client-secret", default="sim-client-secret")
    parser.add_argument(
        "--redirect-uri", action="append", help="register exactly (repeatable); default: any"
    )
    parser.add_argument("--realm-id", default="9130357766042906")
    parser.add_argument("--company-name", default="Sandbox Company_US_1")
    parser.add_argument("--app-name", default="Simulated App", help="shown on the consent page")
    parser.add_argument("--refresh-grace-seconds", type=float, default=86400.0)
    parser.add_argument("--rotate-every-seconds", type=float, default=0.0)
    parser.add_argument("--access-token-ttl", type=int, default=3600)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")

    sim = IntuitSimulator(
        host=args.host,
        port=args.port,
        clients={args.client_id: args.client_secret},
        redirect_uris=args.redirect_uri,
        auto_approve=args.auto_approve,
        refresh_grace_seconds=args.refresh_grace_seconds,
        rotate_every_seconds=args.rotate_every_seconds,
        access_token_ttl=args.access_token_ttl,
        default_realm_id=args.realm_id,
        company_name=args.company_name,
        app_name=args.app_name,
    )
    try:
        sim.start()
    except OSError as exc:
        print(exc, file=sys.stderr)
        return 1
    done = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    # The secret is deliberately not printed: it was given on the command line.
    info = {"base_url": sim.base_url, "client_id": args.client_id, "endpoints": sim.endpoints}
    print(json.dumps(info), flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        sim.stop()
    return 0
