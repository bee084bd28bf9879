"""Lottery Ticket Explorer: Panel views of the engine's runs (app, notebook views, HTML reports)."""
