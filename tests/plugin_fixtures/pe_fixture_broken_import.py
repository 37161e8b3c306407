"""A fixture plugin that cannot even be imported."""

raise RuntimeError("pe_fixture_broken_import exploded at import")
