"""The data every row runs on: pgbench's tables, loaded once per cluster and then left alone."""

from __future__ import annotations

from voxbench.cluster import DATABASE, Cluster
from voxbench.commands import run

# pgbench creates 100,000 pgbench_accounts rows per unit of scale.
ACCOUNTS_PER_SCALE = 100_000


def load_pgbench_tables(cluster: Cluster, scale: int) -> None:
    """Creates the pgbench tables (server-side generation), frozen, analyzed and checkpointed.

    Freezing sets every hint bit and the visibility map now, so no measured run pays for it.
    """
    run([cluster.install.program("pgbench"), *cluster.client_args(), "-i", "-s", str(scale),
         "-I", "dtGvp", DATABASE], cwd=cluster.workdir, what=f"pgbench -i -s {scale}")
    cluster.psql("VACUUM (FREEZE, ANALYZE)")
    cluster.psql("CHECKPOINT")
