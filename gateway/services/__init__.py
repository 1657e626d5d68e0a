"""Gateway services: the logic behind the routes (quotes, catalogue, account encryption)."""
