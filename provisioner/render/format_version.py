"""The version every `--json` document carries; it goes up only when a field is removed or changes meaning."""

from typing import Final

FORMAT_VERSION: Final = 1
