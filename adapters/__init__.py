"""Provider adapters: one protocol every top-up provider implements (see DESIGN.md, "Adapters")."""

__all__: list[str] = []
