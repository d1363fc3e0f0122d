"""K islands of one structure: ring migration and batch bookkeeping, without any scheduler.

The driver asks ``ready()`` for batches to evaluate, feeds results back with ``complete()``, and
checkpoints an island (``Island.to_dict()``) after each completed generation. Every ``migrate_every``
generations an island takes the best individual of its ring neighbour (island k-1). With
``deterministic`` the migrant is the neighbour's best right after that same generation, so an island
that gets there first waits for its neighbour (only that one); otherwise it takes the neighbour's
best of the moment and never waits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .ga import Island


@dataclass
class Batch:
    """One generation of one island waiting for fitnesses (filled in batch order)."""

    island: int
    generation: int  # the generation this batch makes (completed generations + 1)
    xs: list[list[float]]
    fitness: list[float | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.fitness:
            self.fitness = [None] * len(self.xs)

    @property
    def complete(self) -> bool:
        """Every individual has its fitness."""
        return all(f is not None for f in self.fitness)


class Archipelago:
    """The islands of one structure, their migration schedule, and the target that stops them all."""

    def __init__(self, islands: list[Island], migrate_every: int, deterministic: bool,
                 target_loglik: float | None) -> None:
        self.islands = islands
        self.migrate_every = max(int(migrate_every), 0)
        self.deterministic = deterministic
        self.target = target_loglik
        self.open: dict[int, Batch] = {}
        self._migrated: set[tuple[int, int]] = set()

    @property
    def done(self) -> bool:
        """Every island has stopped."""
        return all(i.done for i in self.islands)

    def best_per_island(self) -> list[float]:
        """Each island's best log-likelihood (WORST before its first generation)."""
        return [i.best_loglik for i in self.islands]

    def _needs_migrant(self, isl: Island) -> bool:
        """The island is at a migration generation and has not taken its migrant yet."""
        g = isl.generation
        return (self.migrate_every > 0 and len(self.islands) > 1 and g > isl.start_generation
                and g % self.migrate_every == 0
                and (isl.index, g) not in self._migrated and isl.batch is None)

    def ready(self) -> list[Batch]:
        """New batches for islands that are neither done, nor busy, nor waiting for a migrant."""
        out = []
        for isl in self.islands:
            if isl.done or isl.index in self.open:
                continue
            if self._needs_migrant(isl):
                src = self.islands[(isl.index - 1) % len(self.islands)]
                migrant = src.migrant_at(isl.generation) if self.deterministic else src.best
                if migrant is None:
                    continue  # wait for the neighbour to finish this generation
                isl.receive(migrant)
                self._migrated.add((isl.index, isl.generation))
            batch = Batch(isl.index, isl.generation + 1, isl.ask())
            self.open[isl.index] = batch
            out.append(batch)
        return out

    def complete(self, batch: Batch) -> Island:
        """Tell the island its fitnesses; returns it (checkpoint it now)."""
        isl = self.islands[batch.island]
        isl.tell([float(f) for f in batch.fitness])  # type: ignore[arg-type]
        del self.open[batch.island]
        if self.target is not None and isl.best_loglik >= self.target:
            for other in self.islands:
                if not other.done:
                    other.stop("target")
            self.open.clear()
        return isl
