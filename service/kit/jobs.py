"""Names of the background jobs: the API and the domains enqueue them by name, the workers
declare the actors that run them."""

from __future__ import annotations

PROCESS_EVENTS = "process_events"  # process stored events, by id
SEND_MESSAGE = "send_message"  # send queued messages, by id
