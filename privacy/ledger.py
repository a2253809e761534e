"""The site's privacy ledger: every DP-SGD release of this site's data, in one SQLite file at the site.

Before a round trains, the site *reserves* the round's cost in one committed transaction (synchronous=FULL):
if the site's total epsilon with this round would pass its budget, the round is refused and nothing trains.
A reservation counts as spent from the moment it is written, so a process killed mid-round (``kill -9``, power
cut) leaves a ledger that over-reports, never under-reports. A reservation is marked ``released`` when the
weights are handed to Flower, or ``cancelled`` when training failed before anything left the site.

Every release names its unit (``patient`` or ``example``): epsilons of different units do not compose into one
figure (an example-level epsilon bounds a patient only through group privacy), so a ledger keeps one unit and
refuses a round in the other.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from .accounting import Release, epsilon_spent

COUNTED = ("reserved", "released")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run TEXT NOT NULL,
    round INTEGER NOT NULL,
    steps INTEGER NOT NULL,
    sample_rate REAL NOT NULL,
    noise_multiplier REAL NOT NULL,
    accountant TEXT NOT NULL,
    delta REAL NOT NULL,
    epsilon_total REAL NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('reserved', 'released', 'cancelled', 'refused')),
    note TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    unit TEXT NOT NULL DEFAULT 'example',
    trained TEXT NOT NULL DEFAULT ''
)"""


class BudgetExceeded(RuntimeError):
    """The round would take the site past its privacy budget; nothing was trained."""


class UnitMismatch(ValueError):
    """The round protects another unit (patient / example) than the releases already in the ledger."""


@dataclass(frozen=True)
class Reservation:
    id: int
    epsilon_total: float  # the site's epsilon with this round, at the ledger's delta
    epsilon_before: float
    history_before: tuple = ()  # the counted releases before this one (to seed this round's accountant)


class PrivacyLedger:
    """One file per site (``privacy-ledger.sqlite``); safe to open from several processes."""

    def __init__(self, path: str | Path, accountant: str = "rdp") -> None:
        self.path, self.accountant = Path(path), accountant
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(releases)")}
            if "unit" not in columns:  # a ledger written before units were recorded: all its releases were per example
                db.execute("ALTER TABLE releases ADD COLUMN unit TEXT NOT NULL DEFAULT 'example'")
            if "trained" not in columns:  # ... and before the trained part was recorded
                db.execute("ALTER TABLE releases ADD COLUMN trained TEXT NOT NULL DEFAULT ''")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.row_factory = sqlite3.Row
        return db

    @staticmethod
    def _history(db: sqlite3.Connection) -> list[Release]:
        rows = db.execute(f"SELECT noise_multiplier, sample_rate, steps FROM releases WHERE status IN "
                          f"({','.join('?' * len(COUNTED))}) ORDER BY id", COUNTED).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    def history(self) -> list[Release]:
        """Every counted release (reserved or released), oldest first."""
        with closing(self._connect()) as db:
            return self._history(db)

    def spent(self, delta: float) -> float:
        return epsilon_spent(self.history(), delta, self.accountant)

    def unit(self) -> str:
        """The unit of the counted releases ("" for a ledger with none)."""
        with closing(self._connect()) as db:
            row = db.execute(f"SELECT unit FROM releases WHERE status IN ({','.join('?' * len(COUNTED))}) "
                             "ORDER BY id LIMIT 1", COUNTED).fetchone()
        return row[0] if row else ""

    def _check_unit(self, db: sqlite3.Connection, unit: str) -> None:
        row = db.execute(f"SELECT unit FROM releases WHERE status IN ({','.join('?' * len(COUNTED))}) AND unit != ? "
                         "LIMIT 1", (*COUNTED, unit)).fetchone()
        if row:
            raise UnitMismatch(
                f"privacy ledger {self.path} holds {row[0]}-level releases and this round would be {unit}-level; "
                "epsilons of different units do not add up to one guarantee, so the round was refused and nothing "
                f"was trained. Set [privacy] unit = \"{row[0]}\" in site.toml to keep this ledger, or, with your "
                "privacy officer's approval, move the ledger aside to start a new budget")

    def reserve(self, run: str, server_round: int, steps: int, sample_rate: float, noise_multiplier: float,
                delta: float, budget: float, unit: str = "example", trained: str = "") -> Reservation:
        """Write the round's cost before training; BudgetExceeded (and a ``refused`` row) if it would pass
        ``budget``; UnitMismatch (nothing written) if the ledger counts another unit."""
        now = time.time()
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")  # one reservation at a time, even across processes
            try:
                self._check_unit(db, unit)
                history = self._history(db)
                before = epsilon_spent(history, delta, self.accountant)
                after = epsilon_spent(history + [(noise_multiplier, sample_rate, steps)], delta, self.accountant)
                status = "reserved" if after <= budget else "refused"
                note = "" if status == "reserved" else f"would reach epsilon {after:.4g} > budget {budget:g}"
                cursor = db.execute(
                    "INSERT INTO releases (run, round, steps, sample_rate, noise_multiplier, accountant, delta, "
                    "epsilon_total, status, note, created, updated, unit, trained) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (run, server_round, steps, sample_rate, noise_multiplier, self.accountant, delta, after, status,
                     note, now, now, unit, trained))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        if status == "refused":
            raise BudgetExceeded(
                f"privacy budget: round {server_round} of run {run} would take this site's {unit}-level epsilon "
                f"from {before:.3g} to {after:.3g} (delta {delta:.2g}, {self.accountant.upper()} accountant), past "
                f"its budget of {budget:g}; the round was refused and nothing was trained. Raise [privacy] "
                f"budget_epsilon in site.toml only if your privacy officer approves. Ledger: {self.path}")
        return Reservation(int(cursor.lastrowid), after, before, tuple(history))

    def _mark(self, reservation: Reservation, status: str, note: str = "") -> None:
        with closing(self._connect()) as db, db:
            db.execute("UPDATE releases SET status = ?, note = ?, updated = ? WHERE id = ? AND status = 'reserved'",
                       (status, note, time.time(), reservation.id))

    def released(self, reservation: Reservation) -> None:
        """The round's weights were handed over: the cost stays spent."""
        self._mark(reservation, "released")

    def cancel(self, reservation: Reservation, reason: str) -> None:
        """Training failed before anything left the site: the reservation no longer counts."""
        self._mark(reservation, "cancelled", reason[:500])

    def entries(self) -> list[dict]:
        with closing(self._connect()) as db:
            return [dict(row) for row in db.execute("SELECT * FROM releases ORDER BY id")]
