"""acquisition: see drasclr/__init__.py for the layout."""
