"""aiohttp: AML receiver, REST API, operator console, /metrics, /healthz."""
