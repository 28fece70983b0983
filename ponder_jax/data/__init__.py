"""Data: vocabularies, procedural generators, text and thought formatting, pause transforms and
the grain pipeline that mixes, packs and shards them for the trainer."""
