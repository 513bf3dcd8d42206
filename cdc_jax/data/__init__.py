"""Community data: the record schema and directories, the embedded benchmark, importers, stats.

Modules: ``trace_record`` (TraceRecord, CommunityManifest) and ``records``
(reading and writing community directories); ``knowledge``, ``synthetic``,
``synthetic_questions`` and ``compression`` (the embedded benchmark);
``importers`` and ``import_traces`` (published CoT datasets); ``stats``,
``subsample``, ``attach_split``, ``tfds_builder``.
"""
