"""minipacs: an asyncio-native DICOM network server (a mini-PACS)."""

__version__ = "0.1.0"
