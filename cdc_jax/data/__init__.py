"""Community data: records and manifests, the embedded benchmark, importers, length statistics."""
