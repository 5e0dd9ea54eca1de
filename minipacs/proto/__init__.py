"""Sans-I/O DICOM Upper Layer (PS3.8) and DIMSE (PS3.7): bytes in, events out.

Nothing in this package does I/O, reads a clock or imports another minipacs package.
"""
