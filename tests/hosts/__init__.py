"""The relay in real host processes (gunicorn gthread, uvicorn) started by the tests."""
