"""Batch jobs: a JSONL file of utterances, synthesized asynchronously in the gateway through the same ``Pipeline``
as ``Synthesize``, with bounded concurrency, persisted in Redis so that a restarted gateway resumes them.

The Redis schema: ``store.py``. Quotas (``quotas.py``, one counter hash per tenant in the same store, so they hold
across replicas): jobs kept, unfinished jobs, bytes the jobs keep in the store and bytes of output files on disk.
Submit reserves the first three (a result bigger than its allowance pays the rest when it is written); each WAV
reserves its size before it is written (over the quota, the line fails naming it); a delete gives everything back.

Output: ``<batch.output_dir>/<tenant>/<job>/<uttid>.wav`` (written to a temp name, then renamed, before the line is
recorded as done) and ``results.jsonl`` (every line, in line order) when the job ends.

The package: ``lines.py`` (the JSONL input and the tenant's input folder), ``store.py`` (the Redis schema, every
read and write of it), ``runner.py`` (leases, the lines, the output files), ``service.py`` (the RPCs).
"""
from .service import BatchManager

__all__ = ["BatchManager"]
