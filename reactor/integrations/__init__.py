"""Integrations with other systems: the MQTT hub and outbox, webhooks, the fleet link and view."""
