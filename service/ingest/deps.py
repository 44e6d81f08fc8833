"""What the tracking endpoints are handed (FastAPI dependencies): the write-key cache, the
event writer and the dispatcher, put on `app.state` by service.app when the app starts."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.ingest.dispatch import EventDispatcher
from service.ingest.sources import SourceCache
from service.ingest.writer import EventWriter

# Coroutines, as in service.kit.deps: FastAPI would run a plain function in a thread.


async def _sources(request: Request) -> SourceCache:
    sources: SourceCache = request.app.state.sources
    return sources


async def _writer(request: Request) -> EventWriter:
    writer: EventWriter = request.app.state.event_writer
    return writer


async def _dispatcher(request: Request) -> EventDispatcher:
    dispatcher: EventDispatcher = request.app.state.dispatcher
    return dispatcher


Sources = Annotated[SourceCache, Depends(_sources)]
Writer = Annotated[EventWriter, Depends(_writer)]
Dispatcher = Annotated[EventDispatcher, Depends(_dispatcher)]
