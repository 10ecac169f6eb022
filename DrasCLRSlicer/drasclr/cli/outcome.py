"""``drasclr outcome fit|predict`` (placeholder)."""


def add_parser(sub):
    p = sub.add_parser("outcome", help="outcome models")
    p.set_defaults(run=lambda args: 0)
