"""The kit tests itself: broken providers, each caught by the rule written for it."""
