"""Sub-commands of ``meddiff``: each module adds its parser and runs it; the logic lives in the library."""
