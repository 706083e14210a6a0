"""Data-parallel training through each framework's own engine (see README "Data parallelism").

Modules: ``rows`` (how a batch is split; no framework), ``common`` (the math once and the backend
wrapper), one ``<framework>_engine`` per framework, ``launch`` (starting and watching workers)
and ``tasks`` (what the workers run). Nothing here imports a framework until an engine is built.
"""
