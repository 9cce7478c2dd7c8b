"""Stream processing: per-patient state and the coordination rules, live (Faust) and offline."""
