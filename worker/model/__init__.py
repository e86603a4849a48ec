"""Sentence-embedding runtime of the worker (all-MiniLM-L6-v2)."""

from worker.model._mkl import request_strict_cnr

request_strict_cnr()
