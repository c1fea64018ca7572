"""Routing: embed domain cards, index them, pick adapters for queries, assemble merges.

``scoring`` is pure math, ``index`` the in-memory search structure,
``embedders`` the text encoders (a registry), ``router`` keeps the index
current with the catalog, ``assembly`` turns routes into merge recipes.
"""
