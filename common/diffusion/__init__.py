"""The diffusion core: noise schedules (DDPM, NCSN, score SDEs) behind one interface, and samplers."""
