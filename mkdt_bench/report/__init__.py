"""Reading results back. Stored rows are decoded into facets (:mod:`.facets`), gathered
into cell groups (:mod:`.groups`) with their statistics (:mod:`.stats`), laid out as
captioned tables (:mod:`.tables`) and written in a format of :mod:`.formats`
(:mod:`.compose`, what :mod:`.contents` a report holds); figures of results
(:mod:`.figures`) and of a set's images (:mod:`.set_images`); which rows a command shows
(:mod:`.select`). Nothing here imports the method or evaluator registries."""
