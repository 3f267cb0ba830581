"""Shared pieces of voxperf's benchmark parts (bench/<part>/run.py).

Standard library only. The modules:

- ``commands``  running external programs; ``BenchError`` for failures a user can act on
- ``cluster``   throw-away PostgreSQL clusters run as the right OS user (never root)
- ``extension`` building and installing the voxperf extension before it is measured
- ``machine``   the facts a report must carry (CPU, PostgreSQL version, voxperf commit)
- ``knobs``     the environment variables that tune a part
- ``table``     one table rendered as aligned text (stdout) or Markdown (reports); durations
- ``part``      the end of a part: its work directory removed or kept, its report written
"""
