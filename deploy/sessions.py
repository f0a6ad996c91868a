"""Per-episode state of the policy server: one executor per client session, so ``/act`` can carry a chunk head's
chunks (open-loop or temporally ensembled) or a gmm head's sampling generator from one request to the next.

A client names its episode with a ``session`` id in each ``/act`` request; a new id starts a new episode (its
``seed`` seeds sampling). The store keeps at most ``capacity`` sessions and forgets the least recently used one
beyond that; requests of one session are served one after the other (its lock), as steps of an episode must be.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import NamedTuple

from imitlab.core.action_execution import EpisodeExecutor, Execution


class Session(NamedTuple):
    """One client episode: its executor and the lock that orders its steps."""

    executor: EpisodeExecutor
    lock: threading.Lock


class SessionStore:
    """Sessions by id, least recently used forgotten first."""

    def __init__(self, execution: Execution, capacity: int) -> None:
        self.execution = execution
        self.capacity = capacity
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, session_id: str, seed: int) -> Session:
        """The session ``session_id``, started from ``seed`` if it is new (an existing one keeps its seed)."""
        with self.lock:
            session = self.sessions.get(session_id)
            if session is None:
                session = Session(EpisodeExecutor(self.execution, seed), threading.Lock())
                self.sessions[session_id] = session
                while len(self.sessions) > self.capacity:
                    self.sessions.popitem(last=False)
            self.sessions.move_to_end(session_id)
            return session

    def __len__(self) -> int:
        with self.lock:
            return len(self.sessions)
