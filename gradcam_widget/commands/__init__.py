"""The command line's commands, one module each: its arguments (``add_parser``) and its body
(``run``). ``gradcam_widget.__main__`` only builds the parser from them and dispatches.

The top layer of the package, with ``__main__``: ``audit`` uses :mod:`gradcam_widget.auditing`.
"""
