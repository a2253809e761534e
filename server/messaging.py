"""Sending messages to the sites and collecting their replies, polling the SuperLink every 0.1 s.

Why: Flower 1.42's ``Grid.send_and_receive`` sleeps 3 s between pulls on the deployment engine, so a round ended
on average 1.5 s after its last reply had arrived. This is the same loop on the Grid's own ``push_messages`` and
``pull_messages``, at a shorter interval: while a round waits, the ServerApp asks the SuperLink (a local call
on the coordinator's machine) ten times a second; between rounds it asks nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

POLL_SECONDS = 0.1


@dataclass
class Collected:
    """The replies, when the messages had been pushed, and when each reply reached the ServerApp (Unix time)."""

    replies: list[Message]
    sent_at: float
    arrived_at: dict[str, float] = field(default_factory=dict)  # by the replying node's id

    def transfer_seconds(self) -> dict[str, float]:
        """Per node: from the reply's creation at the site to its arrival here (the site guard, the SuperNode,
        TLS to the SuperLink, this loop's poll; on two machines their clocks' skew too)."""
        return {str(r.metadata.src_node_id): max(0.0, self.arrived_at[str(r.metadata.src_node_id)]
                                                 - r.metadata.created_at) for r in self.replies}


def send_and_collect(grid: Grid, messages: Iterable[Message], timeout: float | None,
                     every: float = POLL_SECONDS) -> Collected:
    """Push ``messages``; pull replies every ``every`` seconds until each has one or ``timeout`` passed."""
    waiting = set(grid.push_messages(messages))
    collected = Collected([], time.time())
    deadline = None if timeout is None else time.monotonic() + timeout
    while waiting and (deadline is None or time.monotonic() < deadline):
        replies = list(grid.pull_messages(waiting))
        now = time.time()
        for reply in replies:
            collected.replies.append(reply)
            collected.arrived_at[str(reply.metadata.src_node_id)] = now
            waiting.discard(reply.metadata.reply_to_message_id)
        if waiting:
            time.sleep(every)
    return collected
