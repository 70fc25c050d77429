"""Data readers: split loading (Hub ids and local files) and one reader per modality."""
