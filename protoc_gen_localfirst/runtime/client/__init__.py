"""The client: endpoint order, attempts and retries, channels; asyncio and blocking drivers."""
