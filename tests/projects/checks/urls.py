"""No views: the checks project is only ever checked and started."""

urlpatterns: list[object] = []
