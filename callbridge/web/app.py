"""The ASGI application: routes and the lifespan that starts and stops every part.

Nothing is built here: :func:`create_app` takes a ready :class:`Services` (built in one
place, :func:`callbridge.app.build_services`, or by a test) and only mounts it. Startup
and shutdown happen in the lifespan, in order: components start in the order given and
stop in reverse, so the event workers stop before the AMI link they originate on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.routing import Route

from callbridge.actions.callback import Callback
from callbridge.actions.click_to_call import ClickToCall
from callbridge.store.app_state import AppState
from callbridge.web.events import EventDispatcher, EventIntake, EventRegistry
from callbridge.web.health import Health
from callbridge.web.install import Installer

__all__ = ["EVENTS_PATH", "INSTALL_PATH", "Component", "Services", "create_app"]

log = logging.getLogger(__name__)

EVENTS_PATH = "/bitrix24/events"
INSTALL_PATH = "/bitrix24/install"


class Component(Protocol):
    """Anything with a lifetime: the AMI link, the engine, the outbox worker."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class FunctionComponent:
    """A component made of two coroutines (for small pieces that need no class)."""

    name: str
    on_start: Callable[[], Awaitable[None]]
    on_stop: Callable[[], Awaitable[None]]

    async def start(self) -> None:
        await self.on_start()

    async def stop(self) -> None:
        await self.on_stop()


@dataclass
class Services:
    """Everything the running process is made of, built once and passed in.

    ``components`` are started in order by the lifespan and stopped in reverse. The
    engine and outbox join as components (and add a health probe) when they exist; the
    fields below are what the web side itself needs.
    """

    state: AppState
    registry: EventRegistry
    dispatcher: EventDispatcher
    intake: EventIntake
    installer: Installer
    health: Health
    components: list[Component] = field(default_factory=list)
    click: ClickToCall | None = None
    callback: Callback | None = None
    #: Anything else a later issue adds (engine, outbox…), by name, for tools and tests.
    extras: dict[str, Any] = field(default_factory=dict)
    started: bool = False
    #: Set once every component has started (the server waits on it before announcing).
    ready: asyncio.Event = field(default_factory=asyncio.Event)


def create_app(services: Services) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        started: list[Component] = []
        services.dispatcher.start()
        try:
            for component in services.components:
                try:
                    await component.start()
                except Exception as exc:
                    # One clear line naming the part (a FastAGI port in use, say); the
                    # parts already started are stopped below.
                    log.error("could not start %s: %s", component.name, exc)
                    raise
                started.append(component)
                log.info("started %s", component.name)
            services.started = True
            services.ready.set()
            yield
        finally:
            services.started = False
            services.ready.clear()
            await services.dispatcher.stop()
            await _stop_all(reversed(started))

    routes = [
        Route(EVENTS_PATH, services.intake.endpoint, methods=["POST"]),
        Route(INSTALL_PATH, services.installer.endpoint, methods=["POST"]),
        Route("/health", services.health.endpoint, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.services = services
    return app


async def _stop_all(components: Sequence[Component] | Any) -> None:
    for component in components:
        try:
            await component.stop()
            log.info("stopped %s", component.name)
        except Exception:  # one part failing to stop must not keep the others running
            log.exception("stopping %s failed", component.name)
