"""The multi-process harness: a private redis-server and relay hosts run as real worker processes.

:mod:`tests.workers.servers` starts them (free loopback ports, bounded lifetimes, stopped by the
fixtures that start them); :mod:`tests.workers.hosts` holds the three host apps they serve
(FastAPI under uvicorn, Flask and Django under gunicorn), each reading the relay configuration
from the JSON file named by ``RELAY_WORKER_CONFIG`` and answering ``GET /whoami`` with its pid.
"""
