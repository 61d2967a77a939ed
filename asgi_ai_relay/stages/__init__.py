"""The pipeline stages, one module each, in the order relay.py runs them."""
