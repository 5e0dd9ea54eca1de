"""Association negotiation (PS3.8 §7.1, PS3.7 Annex D) as pure functions: no sockets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from minipacs.proto import sop
from minipacs.proto.negotiation import (
    DEFAULT_ASYNC_OPS_LIMIT,
    DEFAULT_MAX_PDU_LENGTH,
    MAX_PRESENTATION_CONTEXTS,
    AcceptedContext,
    AcceptorPolicy,
    Negotiated,
    NegotiationError,
    association_limit_rejection,
    build_associate_rq,
    check_association,
    choose_transfer_syntax,
    default_supported,
    find_context,
    negotiate_as_acceptor,
    negotiated,
    valid_ae_title,
)
from minipacs.proto.pdu import (
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AsyncOpsWindow,
    ContextResult,
    PresentationContextAC,
    PresentationContextRQ,
    RejectReason,
    RejectResult,
    RejectSource,
    RoleSelection,
    SopClassExtended,
    UserIdentityAC,
    UserIdentityRQ,
    UserInformation,
)

OUR_AE = "MINIPACS"
PEER_AE = "MODALITY"
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
PRIVATE_CLASS = "1.2.826.0.1.3680043.9.9999.1"
IMPLICIT = sop.IMPLICIT_VR_LITTLE_ENDIAN
EXPLICIT = sop.EXPLICIT_VR_LITTLE_ENDIAN
DEFLATED = sop.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
BIG = sop.EXPLICIT_VR_BIG_ENDIAN
J2K = sop.JPEG_2000_LOSSLESS
UNKNOWN_TS = "1.2.826.0.1.3680043.9.9999.2"


def make_policy(**changes: object) -> AcceptorPolicy:
    """The default policy, with C-GET storage (SCU role) for CT only unless changed."""
    fields: dict[str, object] = {
        "ae_title": OUR_AE,
        "supported": default_supported(),
        "scu_role_classes": frozenset({CT}),
    }
    fields.update(changes)
    return AcceptorPolicy(**fields)  # type: ignore[arg-type]


def make_rq(
    contexts: Sequence[tuple[int, str, Sequence[str]]] = ((1, CT, (EXPLICIT,)),),
    **ui: object,
) -> AAssociateRQ:
    """An A-ASSOCIATE-RQ built field by field, independent of build_associate_rq."""
    user_information = UserInformation(
        max_length=ui.pop("max_length", 16384),  # type: ignore[arg-type]
        implementation_class_uid="1.2.3.4",
        **ui,  # type: ignore[arg-type]
    )
    return AAssociateRQ(
        called_ae_title=OUR_AE,
        calling_ae_title=PEER_AE,
        presentation_contexts=tuple(
            PresentationContextRQ(cid, abstract, tuple(ts)) for cid, abstract, ts in contexts
        ),
        user_information=user_information,
    )


def accept(rq: AAssociateRQ, policy: AcceptorPolicy | None = None) -> AAssociateAC:
    answer = negotiate_as_acceptor(rq, policy or make_policy())
    assert isinstance(answer, AAssociateAC), answer
    return answer


def accept_with(rq: AAssociateRQ, **options: object) -> AAssociateAC:
    answer = negotiate_as_acceptor(rq, make_policy(), **options)  # type: ignore[arg-type]
    assert isinstance(answer, AAssociateAC), answer
    return answer


def results(ac: AAssociateAC) -> dict[int, tuple[ContextResult, str]]:
    return {pc.context_id: (pc.result, pc.transfer_syntax) for pc in ac.presentation_contexts}


# -- association-level rejections (PS3.8 §9.3.4) -----------------------------------------


class TestRejections:
    def test_wrong_application_context(self) -> None:
        rq = replace(make_rq(), application_context="1.2.3.4.5")
        assert negotiate_as_acceptor(rq, make_policy()) == AAssociateRJ(
            RejectResult.PERMANENT,
            RejectSource.SERVICE_USER,
            RejectReason.APPLICATION_CONTEXT_NOT_SUPPORTED,
        )

    def test_padded_application_context_is_accepted(self) -> None:
        accept(replace(make_rq(), application_context=sop.APPLICATION_CONTEXT + "\0"))

    @pytest.mark.parametrize("version", [0x0000, 0x0002, 0x8000])
    def test_protocol_version_bit_missing(self, version: int) -> None:
        rq = replace(make_rq(), protocol_version=version)
        assert negotiate_as_acceptor(rq, make_policy()) == AAssociateRJ(
            RejectResult.PERMANENT, RejectSource.SERVICE_PROVIDER_ACSE, 2
        )

    def test_protocol_version_other_bits_ignored(self) -> None:
        accept(replace(make_rq(), protocol_version=0x0003))

    def test_acse_check_comes_before_service_user_checks(self) -> None:
        rq = replace(make_rq(), protocol_version=0, application_context="1.2.3")
        answer = negotiate_as_acceptor(rq, make_policy())
        assert isinstance(answer, AAssociateRJ)
        assert answer.source == RejectSource.SERVICE_PROVIDER_ACSE

    def test_called_ae_checked_when_enabled(self) -> None:
        rq = replace(make_rq(), called_ae_title="SOMEONE")
        assert negotiate_as_acceptor(rq, make_policy(check_called_ae=True)) == AAssociateRJ(
            RejectResult.PERMANENT,
            RejectSource.SERVICE_USER,
            RejectReason.CALLED_AE_NOT_RECOGNIZED,
        )

    def test_called_ae_not_checked_by_default(self) -> None:
        accept(replace(make_rq(), called_ae_title="SOMEONE"))

    def test_called_ae_padding_is_not_significant(self) -> None:
        rq = replace(make_rq(), called_ae_title=f" {OUR_AE}    ")
        accept(rq, make_policy(check_called_ae=True))

    def test_called_ae_is_case_sensitive(self) -> None:
        rq = replace(make_rq(), called_ae_title=OUR_AE.lower())
        answer = negotiate_as_acceptor(rq, make_policy(check_called_ae=True))
        assert isinstance(answer, AAssociateRJ)

    def test_check_association_alone_answers_the_protocol_checks(self) -> None:
        """The listener runs these before the access policy; a good RQ passes them."""
        assert check_association(make_rq(), make_policy(check_called_ae=True)) is None
        rq = replace(make_rq(), called_ae_title="ELSEWHERE")
        assert check_association(rq, make_policy(check_called_ae=True)) == AAssociateRJ(
            RejectResult.PERMANENT, RejectSource.SERVICE_USER,
            RejectReason.CALLED_AE_NOT_RECOGNIZED)

    def test_association_limit_rejection(self) -> None:
        assert association_limit_rejection() == AAssociateRJ(
            RejectResult.TRANSIENT, RejectSource.SERVICE_PROVIDER_PRESENTATION, 1
        )
        assert association_limit_rejection(per_peer=True) == AAssociateRJ(
            RejectResult.TRANSIENT, RejectSource.SERVICE_PROVIDER_PRESENTATION, 2
        )

    @pytest.mark.parametrize("title", ["EVIL\nFAKE LINE", "\x1b[2J", "NUL\x00X", "A\\B",
                                       "DEL\x7f", "    "])
    @pytest.mark.parametrize("which", ["calling", "called"])
    def test_a_title_that_is_no_ae_value_is_refused(self, title: str, which: str) -> None:
        """PS3.5 §6.2: no control characters, no backslash, not only spaces; whatever the
        policy says (both checks off here)."""
        rq = replace(make_rq(), **{f"{which}_ae_title": title})
        reason = (RejectReason.CALLING_AE_NOT_RECOGNIZED if which == "calling"
                  else RejectReason.CALLED_AE_NOT_RECOGNIZED)
        assert negotiate_as_acceptor(rq, make_policy()) == AAssociateRJ(
            RejectResult.PERMANENT, RejectSource.SERVICE_USER, reason)

    @pytest.mark.parametrize("title", ["CT_1", " PADDED ", "a-z 0-9 ~!", "X" * 16])
    def test_ordinary_titles_pass(self, title: str) -> None:
        assert valid_ae_title(title)


# -- presentation contexts (PS3.8 §7.1.1.13-14, §9.3.3.2) --------------------------------


class TestContexts:
    def test_each_result(self) -> None:
        rq = make_rq(
            [
                (1, CT, (EXPLICIT,)),
                (3, PRIVATE_CLASS, (EXPLICIT,)),
                (5, CT, (UNKNOWN_TS,)),
                (7, sop.VERIFICATION, (J2K,)),  # Verification takes native syntaxes only
            ]
        )
        assert results(accept(rq)) == {
            1: (ContextResult.ACCEPTANCE, EXPLICIT),
            3: (ContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED, ""),
            5: (ContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED, ""),
            7: (ContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED, ""),
        }

    def test_one_result_per_context_in_proposal_order(self) -> None:
        rq = make_rq([(cid, CT, (IMPLICIT,)) for cid in (9, 1, 5)])
        assert [pc.context_id for pc in accept(rq).presentation_contexts] == [9, 1, 5]

    def test_duplicate_context_id_answered_once(self) -> None:
        rq = make_rq([(1, CT, (IMPLICIT,)), (1, MR, (EXPLICIT,))])
        assert accept(rq).presentation_contexts == (
            PresentationContextAC(1, ContextResult.ACCEPTANCE, IMPLICIT),
        )

    def test_same_abstract_syntax_in_two_contexts(self) -> None:
        rq = make_rq([(1, CT, (J2K,)), (3, CT, (IMPLICIT,))])
        assert results(accept(rq)) == {
            1: (ContextResult.ACCEPTANCE, J2K),
            3: (ContextResult.ACCEPTANCE, IMPLICIT),
        }

    def test_all_rejected_still_accepts_the_association(self) -> None:
        rq = make_rq([(1, PRIVATE_CLASS, (IMPLICIT,)), (3, CT, (UNKNOWN_TS,))])
        ac = accept(rq)
        assert all(pc.result != ContextResult.ACCEPTANCE for pc in ac.presentation_contexts)
        assert negotiated(rq, ac, local_is_requestor=False).contexts == {}

    def test_padded_uids_are_recognised(self) -> None:
        rq = make_rq([(1, CT + "\0", (EXPLICIT + "\0",))])
        assert results(accept(rq)) == {1: (ContextResult.ACCEPTANCE, EXPLICIT)}

    def test_extra_storage_classes(self) -> None:
        rq = make_rq([(1, PRIVATE_CLASS, (J2K,))])
        policy = make_policy(supported=default_supported([PRIVATE_CLASS]))
        assert results(accept(rq, policy)) == {1: (ContextResult.ACCEPTANCE, J2K)}

    def test_default_supported_contents(self) -> None:
        supported = default_supported()
        native = frozenset(sop.UNCOMPRESSED_TRANSFER_SYNTAXES)
        assert supported[sop.VERIFICATION] == native
        for group in sop.QUERY_RETRIEVE_SOP_CLASSES.values():
            for uid in group:
                assert supported[uid] == native
        for uid in sop.NORMALIZED_SOP_CLASSES:
            assert supported[uid] == native
        for uid in sop.STORAGE_SOP_CLASSES:
            assert supported[uid] == frozenset(sop.STORAGE_TRANSFER_SYNTAXES)
        assert len(supported) == 1 + 6 + 4 + len(sop.STORAGE_SOP_CLASSES)


class TestTransferSyntaxChoice:
    @pytest.mark.parametrize(
        ("proposed", "chosen"),
        [
            ((IMPLICIT, EXPLICIT), IMPLICIT),  # the proposer's order wins over ours
            ((EXPLICIT, IMPLICIT), EXPLICIT),
            ((UNKNOWN_TS, DEFLATED, IMPLICIT), DEFLATED),
            ((BIG, IMPLICIT), IMPLICIT),  # big endian only as a last resort
            ((BIG, UNKNOWN_TS, DEFLATED), DEFLATED),
            ((BIG,), BIG),
            ((UNKNOWN_TS, BIG), BIG),
            ((J2K, EXPLICIT), J2K),
            ((UNKNOWN_TS,), None),
            ((), None),
        ],
    )
    def test_choice(self, proposed: tuple[str, ...], chosen: str | None) -> None:
        acceptable = frozenset(sop.STORAGE_TRANSFER_SYNTAXES)
        assert choose_transfer_syntax(proposed, acceptable) == chosen

    def test_big_endian_loses_to_anything_acceptable_in_the_context(self) -> None:
        rq = make_rq([(1, sop.VERIFICATION, (BIG, J2K, IMPLICIT)), (3, CT, (BIG, J2K))])
        assert results(accept(rq)) == {
            1: (ContextResult.ACCEPTANCE, IMPLICIT),
            3: (ContextResult.ACCEPTANCE, J2K),
        }

    def test_big_endian_when_nothing_else(self) -> None:
        rq = make_rq([(1, sop.VERIFICATION, (BIG, J2K))])
        assert results(accept(rq)) == {1: (ContextResult.ACCEPTANCE, BIG)}


# -- user information (PS3.8 D.1, PS3.7 D.3.3) --------------------------------------------


class TestUserInformation:
    def test_ac_identity_and_echo(self) -> None:
        rq = make_rq(
            user_identity=UserIdentityRQ(
                identity_type=1, positive_response_requested=True, primary_field=b"bob"
            ),
        )
        ac = accept(rq, make_policy(max_pdu_length=65536))
        assert (ac.called_ae_title, ac.calling_ae_title) == (OUR_AE, PEER_AE)
        assert ac.application_context == sop.APPLICATION_CONTEXT
        ui = ac.user_information
        assert ui.max_length == 65536
        assert ui.implementation_class_uid == sop.IMPLEMENTATION_CLASS_UID
        assert ui.implementation_version_name == sop.IMPLEMENTATION_VERSION_NAME
        assert ui.user_identity is None  # PS3.7 D.3.3.7: not verified, so not answered
        assert ui.async_ops_window is None
        assert ui.role_selections == ()
        assert ui.sop_class_extended == ()

    def test_verified_identity_is_answered_when_asked(self) -> None:
        """PS3.7 D.3.3.7.2: the server response, empty for types 1 and 2."""
        rq = make_rq(user_identity=UserIdentityRQ(2, True, b"alice", b"secret"))
        ac = accept_with(rq, identity_response=b"")
        assert ac.user_information.user_identity == UserIdentityAC(b"")

    def test_identity_response_needs_a_request_item(self) -> None:
        """PS3.7 D.3.3.7: without the RQ sub-item the AC carries none."""
        ac = accept_with(make_rq(), identity_response=b"")
        assert ac.user_information.user_identity is None

    def test_policy_defaults(self) -> None:
        policy = AcceptorPolicy(ae_title=OUR_AE, supported={})
        assert policy.max_pdu_length == DEFAULT_MAX_PDU_LENGTH == 262144
        assert policy.async_ops_limit == DEFAULT_ASYNC_OPS_LIMIT == 16
        assert policy.check_called_ae is False
        assert policy.implementation_class_uid == sop.IMPLEMENTATION_CLASS_UID

    def test_policy_is_frozen_against_caller_mutation(self) -> None:
        supported = {CT: {EXPLICIT}}
        policy = AcceptorPolicy(ae_title=OUR_AE, supported=supported)  # type: ignore[arg-type]
        supported[MR] = {EXPLICIT}
        assert set(policy.supported) == {CT}
        assert policy.supported[CT] == frozenset({EXPLICIT})
        with pytest.raises(TypeError):
            policy.supported[MR] = frozenset()  # type: ignore[index]

    @pytest.mark.parametrize("bad", [{"max_pdu_length": -1}, {"async_ops_limit": 65536}])
    def test_policy_ranges(self, bad: dict[str, int]) -> None:
        with pytest.raises(ValueError):
            make_policy(**bad)

    @pytest.mark.parametrize(
        ("proposed", "limit", "answered"),
        [
            (None, 16, None),  # absent stays absent (PS3.7 D.3.3.3)
            ((1, 1), 16, (1, 1)),
            ((0, 0), 16, (16, 16)),  # unlimited proposal is negotiated down
            ((5, 3), 16, (5, 3)),
            ((32, 32), 16, (16, 16)),
            ((32, 2), 16, (16, 2)),
            ((32, 0), 0, (32, 0)),  # our limit 0 = unlimited
            ((0, 0), 0, (0, 0)),
            ((0, 7), 4, (4, 4)),
        ],
    )
    def test_async_window(
        self, proposed: tuple[int, int] | None, limit: int, answered: tuple[int, int] | None
    ) -> None:
        window = None if proposed is None else AsyncOpsWindow(*proposed)
        rq = make_rq(async_ops_window=window)
        ac = accept(rq, make_policy(async_ops_limit=limit))
        expected = None if answered is None else AsyncOpsWindow(*answered)
        assert ac.user_information.async_ops_window == expected
        for local_is_requestor in (True, False):
            result = negotiated(rq, ac, local_is_requestor=local_is_requestor)
            assert (result.async_invoked, result.async_performed) == (answered or (1, 1))

    def test_window_answered_without_proposal_is_ignored(self) -> None:
        rq = make_rq()
        ac = accept(rq)
        ac = replace(
            ac, user_information=replace(ac.user_information, async_ops_window=AsyncOpsWindow(8, 8))
        )
        result = negotiated(rq, ac, local_is_requestor=True)
        assert (result.async_invoked, result.async_performed) == (1, 1)

    def test_peer_max_pdu(self) -> None:
        rq = make_rq(max_length=16384)
        ac = accept(rq, make_policy(max_pdu_length=32768))
        assert negotiated(rq, ac, local_is_requestor=True).peer_max_pdu == 32768
        assert negotiated(rq, ac, local_is_requestor=False).peer_max_pdu == 16384
        no_limit = make_rq(max_length=None)
        assert negotiated(no_limit, accept(no_limit), local_is_requestor=False).peer_max_pdu == 0


# -- SCP/SCU role selection (PS3.7 D.3.3.4) ------------------------------------------------


class TestRoleSelection:
    def test_acceptor_answers(self) -> None:
        rq = make_rq(
            [(1, CT, (EXPLICIT,)), (3, MR, (EXPLICIT,)), (5, PRIVATE_CLASS, (EXPLICIT,))],
            role_selections=(
                RoleSelection(CT, scu_role=True, scp_role=True),  # SCP allowed for CT
                RoleSelection(MR, scu_role=False, scp_role=True),  # not allowed for MR
                RoleSelection(PRIVATE_CLASS, scu_role=True, scp_role=True),  # rejected ctx
                RoleSelection(sop.VERIFICATION, scu_role=True, scp_role=True),  # no context
                RoleSelection(CT, scu_role=False, scp_role=False),  # second item for CT
            ),
        )
        assert accept(rq).user_information.role_selections == (
            RoleSelection(CT, scu_role=True, scp_role=True),
            RoleSelection(MR, scu_role=False, scp_role=False),
        )

    def test_never_answers_a_role_not_proposed(self) -> None:
        rq = make_rq(role_selections=(RoleSelection(CT, scu_role=False, scp_role=False),))
        assert accept(rq).user_information.role_selections == (
            RoleSelection(CT, scu_role=False, scp_role=False),
        )

    @pytest.mark.parametrize(
        ("rq_roles", "ac_roles", "requestor_roles"),
        [
            (None, None, (True, False)),  # no item: requestor SCU, acceptor SCP
            ((True, False), None, (True, False)),  # not answered: defaults
            ((False, True), None, (True, False)),
            ((True, True), None, (True, False)),
            ((True, False), (True, False), (True, False)),
            ((True, False), (False, False), (False, False)),
            ((False, True), (False, True), (False, True)),  # reversed roles
            ((False, True), (False, False), (False, False)),
            ((True, True), (True, True), (True, True)),
            ((True, True), (True, False), (True, False)),
            ((True, True), (False, True), (False, True)),
            ((True, True), (False, False), (False, False)),
            ((True, False), (True, True), (True, False)),  # unproposed SCP answer ignored
            ((False, True), (True, True), (False, True)),  # unproposed SCU answer ignored
            ((False, False), (True, True), (False, False)),
        ],
    )
    def test_requestor_side_outcome(
        self,
        rq_roles: tuple[bool, bool] | None,
        ac_roles: tuple[bool, bool] | None,
        requestor_roles: tuple[bool, bool],
    ) -> None:
        rq_items = () if rq_roles is None else (RoleSelection(CT, *rq_roles),)
        ac_items = () if ac_roles is None else (RoleSelection(CT, *ac_roles),)
        rq = make_rq(role_selections=rq_items)
        ac = AAssociateAC(
            called_ae_title=OUR_AE,
            calling_ae_title=PEER_AE,
            presentation_contexts=(PresentationContextAC(1, ContextResult.ACCEPTANCE, EXPLICIT),),
            user_information=UserInformation(max_length=0, role_selections=ac_items),
        )
        ctx = negotiated(rq, ac, local_is_requestor=True).contexts[1]
        assert (ctx.scu_role, ctx.scp_role) == requestor_roles

    @pytest.mark.parametrize(
        ("proposed", "in_scu_role_classes", "requestor_roles"),
        [
            ((True, False), True, (True, False)),
            ((False, True), True, (False, True)),
            ((True, True), True, (True, True)),
            ((False, True), False, (False, False)),
            ((True, True), False, (True, False)),
        ],
    )
    def test_both_sides_agree(
        self,
        proposed: tuple[bool, bool],
        in_scu_role_classes: bool,
        requestor_roles: tuple[bool, bool],
    ) -> None:
        rq = make_rq(role_selections=(RoleSelection(CT, *proposed),))
        classes = frozenset({CT}) if in_scu_role_classes else frozenset()
        ac = accept(rq, make_policy(scu_role_classes=classes))
        for local_is_requestor in (True, False):
            ctx = negotiated(rq, ac, local_is_requestor=local_is_requestor).contexts[1]
            assert (ctx.scu_role, ctx.scp_role) == requestor_roles

    def test_roles_apply_to_every_context_of_the_class(self) -> None:
        rq = make_rq(
            [(1, CT, (EXPLICIT,)), (3, CT, (J2K,)), (5, MR, (EXPLICIT,))],
            role_selections=(RoleSelection(CT, scu_role=False, scp_role=True),),
        )
        contexts = negotiated(rq, accept(rq), local_is_requestor=False).contexts
        assert [(c.scu_role, c.scp_role) for c in contexts.values()] == [
            (False, True),
            (False, True),
            (True, False),
        ]


# -- SOP class extended negotiation (PS3.7 D.3.3.5) ---------------------------------------


class TestExtendedNegotiation:
    def test_handlers(self) -> None:
        seen: list[bytes] = []

        def answer(info: bytes) -> bytes:
            seen.append(info)
            return b"\x01"

        policy = make_policy(
            extended={CT: answer, MR: lambda info: None, PRIVATE_CLASS: answer},
        )
        rq = make_rq(
            [(1, CT, (EXPLICIT,)), (3, MR, (EXPLICIT,)), (5, PRIVATE_CLASS, (EXPLICIT,))],
            sop_class_extended=(
                SopClassExtended(CT, b"\x01\x00"),
                SopClassExtended(MR, b"\x01"),  # handler declines
                SopClassExtended(PRIVATE_CLASS, b"\x01"),  # context rejected
                SopClassExtended(sop.VERIFICATION, b"\x01"),  # no handler
            ),
        )
        ac = accept(rq, policy)
        assert ac.user_information.sop_class_extended == (SopClassExtended(CT, b"\x01"),)
        assert seen == [b"\x01\x00"]
        assert negotiated(rq, ac, local_is_requestor=True).extended == {CT: b"\x01"}

    def test_no_handlers_no_answers(self) -> None:
        rq = make_rq(sop_class_extended=(SopClassExtended(CT, b"\x01"),))
        assert accept(rq).user_information.sop_class_extended == ()


# -- requestor side -------------------------------------------------------------------------


def _ac_for(rq: AAssociateRQ, *contexts: PresentationContextAC, **ui: object) -> AAssociateAC:
    return AAssociateAC(
        called_ae_title=rq.called_ae_title,
        calling_ae_title=rq.calling_ae_title,
        presentation_contexts=contexts,
        user_information=UserInformation(max_length=0, **ui),  # type: ignore[arg-type]
    )


class TestRequestorValidation:
    def test_error_is_a_value_error(self) -> None:
        assert issubclass(NegotiationError, ValueError)

    def test_accepted_context_never_proposed(self) -> None:
        rq = make_rq()
        ac = _ac_for(rq, PresentationContextAC(3, ContextResult.ACCEPTANCE, EXPLICIT))
        with pytest.raises(NegotiationError):
            negotiated(rq, ac, local_is_requestor=True)

    def test_rejected_unknown_context_is_ignored(self) -> None:
        rq = make_rq()
        ac = _ac_for(
            rq,
            PresentationContextAC(1, ContextResult.ACCEPTANCE, EXPLICIT),
            PresentationContextAC(3, ContextResult.USER_REJECTION),
        )
        assert set(negotiated(rq, ac, local_is_requestor=True).contexts) == {1}

    def test_transfer_syntax_not_proposed(self) -> None:
        rq = make_rq([(1, CT, (EXPLICIT,)), (3, CT, (IMPLICIT,))])
        ac = _ac_for(rq, PresentationContextAC(1, ContextResult.ACCEPTANCE, IMPLICIT))
        with pytest.raises(NegotiationError):
            negotiated(rq, ac, local_is_requestor=True)

    def test_role_item_for_class_not_proposed(self) -> None:
        rq = make_rq()
        ac = _ac_for(
            rq,
            PresentationContextAC(1, ContextResult.ACCEPTANCE, EXPLICIT),
            role_selections=(RoleSelection(CT, scu_role=True, scp_role=False),),
        )
        with pytest.raises(NegotiationError):
            negotiated(rq, ac, local_is_requestor=True)

    def test_contexts_hold_accepted_only(self) -> None:
        rq = make_rq([(1, CT, (EXPLICIT,)), (3, MR, (J2K, IMPLICIT)), (5, CT, (UNKNOWN_TS,))])
        ac = _ac_for(
            rq,
            PresentationContextAC(3, ContextResult.ACCEPTANCE, IMPLICIT),
            PresentationContextAC(1, ContextResult.NO_REASON),
            PresentationContextAC(5, ContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED),
        )
        result = negotiated(rq, ac, local_is_requestor=True)
        assert dict(result.contexts) == {3: AcceptedContext(3, MR, IMPLICIT, True, False)}

    def test_both_sides_see_the_same_contexts(self) -> None:
        rq = build_associate_rq(
            PEER_AE,
            OUR_AE,
            [(CT, (J2K, EXPLICIT)), (PRIVATE_CLASS, (EXPLICIT,)), (sop.VERIFICATION, (BIG,))],
            async_ops=AsyncOpsWindow(4, 2),
        )
        ac = accept(rq)
        mine = negotiated(rq, ac, local_is_requestor=True)
        theirs = negotiated(rq, ac, local_is_requestor=False)
        assert mine.contexts == theirs.contexts
        assert dict(mine.contexts) == {
            1: AcceptedContext(1, CT, J2K),
            5: AcceptedContext(5, sop.VERIFICATION, BIG),
        }
        assert (mine.async_invoked, mine.async_performed) == (4, 2)


# -- build_associate_rq ---------------------------------------------------------------------


class TestBuildAssociateRq:
    def test_fields(self) -> None:
        role = RoleSelection(CT, scu_role=True, scp_role=True)
        ext = SopClassExtended(CT, b"\x01")
        rq = build_associate_rq(
            PEER_AE,
            OUR_AE,
            [(sop.VERIFICATION, sop.PROPOSABLE_UNCOMPRESSED), (CT, [J2K]), (MR, [IMPLICIT])],
            max_pdu_length=32768,
            implementation_class_uid="1.2.3",
            implementation_version_name="X",
            async_ops=AsyncOpsWindow(3, 1),
            roles=[role],
            extended=[ext],
        )
        assert (rq.calling_ae_title, rq.called_ae_title) == (PEER_AE, OUR_AE)
        assert rq.application_context == sop.APPLICATION_CONTEXT
        assert rq.protocol_version == 1
        assert rq.presentation_contexts == (
            PresentationContextRQ(1, sop.VERIFICATION, sop.PROPOSABLE_UNCOMPRESSED),
            PresentationContextRQ(3, CT, (J2K,)),
            PresentationContextRQ(5, MR, (IMPLICIT,)),
        )
        assert rq.user_information == UserInformation(
            max_length=32768,
            implementation_class_uid="1.2.3",
            implementation_version_name="X",
            async_ops_window=AsyncOpsWindow(3, 1),
            role_selections=(role,),
            sop_class_extended=(ext,),
        )

    def test_defaults(self) -> None:
        ui = build_associate_rq(PEER_AE, OUR_AE, [(CT, [EXPLICIT])]).user_information
        assert ui.max_length == DEFAULT_MAX_PDU_LENGTH
        assert ui.implementation_class_uid == sop.IMPLEMENTATION_CLASS_UID
        assert ui.implementation_version_name == sop.IMPLEMENTATION_VERSION_NAME
        assert ui.async_ops_window is None

    def test_128_contexts_fit(self) -> None:
        contexts = [(CT, [EXPLICIT])] * MAX_PRESENTATION_CONTEXTS
        rq = build_associate_rq(PEER_AE, OUR_AE, contexts)
        ids = [pc.context_id for pc in rq.presentation_contexts]
        assert ids == list(range(1, 256, 2))

    def test_129_contexts_rejected(self) -> None:
        with pytest.raises(ValueError, match="128"):
            build_associate_rq(PEER_AE, OUR_AE, [(CT, [EXPLICIT])] * 129)

    @pytest.mark.parametrize(
        ("calling", "called", "contexts", "roles"),
        [
            (PEER_AE, OUR_AE, [], ()),
            (PEER_AE, OUR_AE, [(CT, [])], ()),
            ("A" * 17, OUR_AE, [(CT, [EXPLICIT])], ()),
            (PEER_AE, "   ", [(CT, [EXPLICIT])], ()),
            (PEER_AE, OUR_AE, [(CT, [EXPLICIT])], [RoleSelection(MR, True, True)]),
            (PEER_AE, OUR_AE, [(CT, [EXPLICIT])], [RoleSelection(CT, True, True)] * 2),
        ],
    )
    def test_invalid(
        self,
        calling: str,
        called: str,
        contexts: list[tuple[str, list[str]]],
        roles: Sequence[RoleSelection],
    ) -> None:
        with pytest.raises(ValueError):
            build_associate_rq(calling, called, contexts, roles=roles)


# -- find_context ---------------------------------------------------------------------------


def _negotiated(*contexts: AcceptedContext) -> Negotiated:
    return Negotiated(contexts={c.context_id: c for c in contexts}, peer_max_pdu=0)


class TestFindContext:
    def test_requestor_sending_requests_needs_its_scu_role(self) -> None:
        n = _negotiated(
            AcceptedContext(5, CT, IMPLICIT),
            AcceptedContext(3, CT, J2K),
            AcceptedContext(1, CT, EXPLICIT, scu_role=False, scp_role=True),
        )
        found = find_context(n, CT, we_are_scu=True, local_is_requestor=True)
        assert found is not None and found.context_id == 3
        found = find_context(n, CT, IMPLICIT, we_are_scu=True, local_is_requestor=True)
        assert found is not None and found.context_id == 5
        assert find_context(n, CT, EXPLICIT, we_are_scu=True, local_is_requestor=True) is None
        assert find_context(n, MR, we_are_scu=True, local_is_requestor=True) is None

    def test_acceptor_sending_c_store_for_c_get_needs_requestor_scp_role(self) -> None:
        default_roles = _negotiated(AcceptedContext(1, CT, EXPLICIT))
        assert find_context(default_roles, CT, we_are_scu=True, local_is_requestor=False) is None
        both = _negotiated(AcceptedContext(1, CT, EXPLICIT, scu_role=True, scp_role=True))
        found = find_context(both, CT, we_are_scu=True, local_is_requestor=False)
        assert found is not None and found.context_id == 1

    def test_acceptor_as_scp_and_requestor_as_scp(self) -> None:
        reversed_roles = _negotiated(AcceptedContext(1, CT, EXPLICIT, False, True))
        assert find_context(reversed_roles, CT, we_are_scu=False, local_is_requestor=False) is None
        assert find_context(reversed_roles, CT, we_are_scu=False, local_is_requestor=True)


# -- interoperability: what pynetdicom proposes (tests only) ---------------------------------


def _pynetdicom_rqs(contexts: Sequence[object]) -> list[AAssociateRQ]:
    pairs = [(cx.abstract_syntax, cx.transfer_syntax) for cx in contexts]  # type: ignore[attr-defined]
    size = MAX_PRESENTATION_CONTEXTS
    return [
        build_associate_rq("PYNETDICOM", OUR_AE, pairs[i : i + size])
        for i in range(0, len(pairs), size)
    ]


@pytest.mark.parametrize("which", ["StoragePresentationContexts", "AllStoragePresentationContexts"])
def test_default_policy_accepts_pynetdicom_storage_contexts(which: str) -> None:
    pynetdicom = pytest.importorskip("pynetdicom")
    proposed = getattr(pynetdicom, which)
    refused: set[str] = set()
    for rq in _pynetdicom_rqs(proposed):
        ac = accept(rq)
        by_id = {pc.context_id: pc for pc in rq.presentation_contexts}
        for answer in ac.presentation_contexts:
            abstract = by_id[answer.context_id].abstract_syntax
            if abstract in sop.STORAGE_SOP_CLASSES:
                assert answer.result == ContextResult.ACCEPTANCE, sop.name_of(abstract)
                # pynetdicom proposes Implicit VR LE first; the proposer's order wins.
                assert answer.transfer_syntax == by_id[answer.context_id].transfer_syntaxes[0]
            else:
                assert answer.result == ContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED
                refused.add(abstract)
    # Only classes we excluded on purpose are refused.
    assert refused <= set(sop.EXCLUDED_STORAGE_SOP_CLASSES), sorted(refused)


def test_pynetdicom_build_context_with_compressed_syntax() -> None:
    pynetdicom = pytest.importorskip("pynetdicom")
    cx = pynetdicom.build_context(CT, [sop.JPEG_LS_LOSSLESS, BIG, EXPLICIT])
    rq = build_associate_rq("PYNETDICOM", OUR_AE, [(cx.abstract_syntax, cx.transfer_syntax)])
    assert results(accept(rq)) == {1: (ContextResult.ACCEPTANCE, sop.JPEG_LS_LOSSLESS)}


# -- what the requestor may use (the access policy's verdict) --------------------------------


class TestPermitted:
    def test_classes_not_permitted_are_user_rejections(self) -> None:
        """PS3.8 §9.3.3.2 result 1: supported, but this requestor may not use it."""
        rq = make_rq(((1, CT, (EXPLICIT,)), (3, sop.VERIFICATION, (IMPLICIT,)),
                      (5, sop.STUDY_ROOT_QR_FIND, (IMPLICIT,))))
        ac = accept_with(rq, permitted=lambda uid: uid != sop.STUDY_ROOT_QR_FIND)
        assert results(ac) == {1: (ContextResult.ACCEPTANCE, EXPLICIT),
                               3: (ContextResult.ACCEPTANCE, IMPLICIT),
                               5: (ContextResult.USER_REJECTION, "")}

    def test_unsupported_stays_unsupported(self) -> None:
        """An unknown class is 'abstract syntax not supported' whatever the permissions."""
        rq = make_rq(((1, PRIVATE_CLASS, (EXPLICIT,)),))
        ac = accept_with(rq, permitted=lambda uid: False)
        assert results(ac) == {1: (ContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED, "")}

    def test_nothing_permitted_still_accepts_the_association(self) -> None:
        """PS3.8 §7.1.1.14: one result per context; the requestor decides to release."""
        rq = make_rq(((1, CT, (EXPLICIT,)), (3, MR, (EXPLICIT,))))
        ac = accept_with(rq, permitted=lambda uid: False)
        assert {r for r, _ in results(ac).values()} == {ContextResult.USER_REJECTION}
        assert ac.user_information.role_selections == ()
