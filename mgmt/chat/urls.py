from django.urls import path

from . import views

app_name = "chat"
urlpatterns = [
    path("", views.chat_home, name="home"),
    path("<int:conversation_id>/", views.conversation, name="conversation"),
    path("<int:conversation_id>/send/", views.conversation_send, name="send"),
    path("<int:conversation_id>/delete/", views.conversation_delete, name="delete"),
]
