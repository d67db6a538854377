"""Versions within a conversation. Messages form a tree through `Message.parent`: a regenerated
reply is a sibling of the reply it replaced, an edited message a sibling of the message it
replaced. The active branch (messages not superseded) is the path the chat shows; switching to
another version makes the path through it active, continuing below it with the newest versions.
"""
from collections import defaultdict

from django.db import transaction

from .turns import ProtocolError, generating_replies, get_owned, take_owner_lock


def versions_of(conversation):
    """{message id: ids of all its versions, oldest first}, for messages that have more than one."""
    children = defaultdict(list)  # by role too: rows written without parents are not all versions of one
    for pk, parent, role in conversation.messages.order_by("id").values_list("id", "parent_id", "role"):
        children[parent, role].append(pk)
    return {pk: ids for ids in children.values() if len(ids) > 1 for pk in ids}


@transaction.atomic
def switch_to(owner, conversation_id, message_id):
    """Make the branch through `message_id` the conversation's active one. Refused while a reply of
    this conversation is generating (it would continue a branch no longer shown). Under the owner's
    lock, so that a turn starting in another tab cannot slip in between the check and the switch."""
    take_owner_lock(owner)
    conversation = get_owned(owner, conversation_id)
    parents = dict(conversation.messages.values_list("id", "parent_id"))
    if message_id not in parents:
        raise ProtocolError("not_found", "no such message in this conversation", conversation_id)
    if generating_replies(owner, conversation_id):
        raise ProtocolError("busy", "a reply is being generated in this conversation; stop it or wait "
                            "before switching versions", conversation_id)
    branch, node = [], message_id
    while node is not None and node not in branch:  # up to the first message
        branch.append(node)
        node = parents.get(node)
    children = defaultdict(list)
    for pk, parent in parents.items():
        children[parent].append(pk)
    node = message_id
    while children[node]:  # down, through the newest version at each step
        node = max(children[node])
        branch.append(node)
    conversation.messages.exclude(pk__in=branch).update(superseded=True)
    conversation.messages.filter(pk__in=branch).update(superseded=False)
    return conversation
