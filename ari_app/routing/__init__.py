"""Who is on duty, who is free, which call goes first, out-of-hours policy."""
