"""The report side: tables (`summarize`), the forgetting analysis (`forgetting`) and the figures
(`plot`). These modules read finished runs, profiles and evaluations; they import no torch."""
