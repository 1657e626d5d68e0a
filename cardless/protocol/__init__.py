"""The Cardless protocol: encodings and models shared by every other package (no I/O, no database)."""
