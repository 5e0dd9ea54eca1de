"""Reliability tooling shared by the CI tests and the long scripts (scripts/fuzz, crash, soak).

corpus.py (valid seeds), mutate.py (byte and structure mutations), core.py (the in-process
fuzz targets and their oracles), procstat.py (RSS and file descriptors from /proc), and the
drivers behind the scripts: fuzz.py, live.py, crash.py, soak.py.
"""
