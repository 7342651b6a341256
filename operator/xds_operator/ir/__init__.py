"""State -> IR (what each proxy group should run) + status conditions for every object."""
