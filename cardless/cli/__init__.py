"""The composition root: one Settings, the wiring, and the ``cardless`` command (Typer)."""
