"""View-models of the app's screens: what a screen shows, computed without Textual.

A screen keeps its layout, key bindings and message handlers; the state it
filters and sorts by, and every value it puts in a cell or a status line,
live in a plain object here, tested without running the app.
"""
