"""DrasCLR reading room in the browser: a trame-slicer shell over the same Logic as the Qt module.

Start it with ``drasclr web`` (or ``drasclr-web``); see docs/web.md.
"""
