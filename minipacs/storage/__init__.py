"""Storage adapters: where Part 10 files live (DESIGN principle 9)."""

from .filesystem import FilesystemSpool, FilesystemStorage, file_checksum

__all__ = ["FilesystemSpool", "FilesystemStorage", "file_checksum"]
