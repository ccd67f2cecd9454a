"""`zerodl info`."""
import json


def configure(parser):
    parser.add_argument("--json", action="store_true", help="print as JSON")


def run(args):
    from ._info import collect, render
    data = collect()
    print(json.dumps(data, indent=2, default=str) if args.json else render(data))
    return 0
