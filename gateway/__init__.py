"""Cardless gateway: catalogue, quotes, order status, merchant keys, webhooks and pages."""

__all__: list[str] = []
